package model

import (
	"net/netip"
	"reflect"
	"testing"
)

var (
	addrType   = reflect.TypeOf(netip.Addr{})
	prefixType = reflect.TypeOf(netip.Prefix{})
)

// fill sets every field reachable from v (slices get one element, pointers
// a value) to the same non-zero values each time.
func fill(v reflect.Value) {
	switch {
	case v.Type() == addrType:
		v.Set(reflect.ValueOf(netip.MustParseAddr("127.0.0.1")))
		return
	case v.Type() == prefixType:
		v.Set(reflect.ValueOf(netip.MustParsePrefix("10.0.0.0/8")))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("a")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	default:
		panic("fill: " + v.Type().String())
	}
}

// change alters the n-th thing (a field's value, a slice's length, a
// pointer's presence) reachable from v in a filled value, counting from
// *seen; it reports whether it did.
func change(v reflect.Value, n int, seen *int) bool {
	here := func() bool { *seen++; return *seen-1 == n }
	switch {
	case v.Type() == addrType:
		if here() {
			v.Set(reflect.ValueOf(netip.MustParseAddr("127.0.0.2")))
			return true
		}
		return false
	case v.Type() == prefixType:
		if here() {
			v.Set(reflect.ValueOf(netip.MustParsePrefix("10.0.0.0/9")))
			return true
		}
		return false
	}
	switch v.Kind() {
	case reflect.String:
		if here() {
			v.SetString("b")
			return true
		}
	case reflect.Bool:
		if here() {
			v.SetBool(false)
			return true
		}
	case reflect.Int, reflect.Int32, reflect.Int64:
		if here() {
			v.SetInt(2)
			return true
		}
	case reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if here() {
			v.SetUint(2)
			return true
		}
	case reflect.Pointer:
		if here() {
			v.Set(reflect.Zero(v.Type()))
			return true
		}
		return change(v.Elem(), n, seen)
	case reflect.Slice:
		if here() {
			v.Set(reflect.Append(v, v.Index(0)))
			return true
		}
		return change(v.Index(0), n, seen)
	case reflect.Struct:
		for i := range v.NumField() {
			if change(v.Field(i), n, seen) {
				return true
			}
		}
	}
	return false
}

func checkEqualCoversEveryField[T any](t *testing.T, equal func(a, b *T) bool) {
	t.Helper()
	var a, b T
	fill(reflect.ValueOf(&a).Elem())
	fill(reflect.ValueOf(&b).Elem())
	if !equal(&a, &b) {
		t.Fatalf("%T: two equal values compare unequal", a)
	}
	for n := 0; ; n++ {
		var c T
		fill(reflect.ValueOf(&c).Elem())
		seen := 0
		if !change(reflect.ValueOf(&c).Elem(), n, &seen) {
			if n < 3 {
				t.Fatalf("%T: nothing to change", a)
			}
			return
		}
		if equal(&a, &c) {
			t.Errorf("%T: change %d (%+v) is not seen by Equal", a, n, c)
		}
	}
}

// TestEqualComparesEveryField changes every field (and slice length and
// pointer) of each part in turn: Equal must see each change, so a field
// added to the model without being compared fails here.
func TestEqualComparesEveryField(t *testing.T) {
	checkEqualCoversEveryField(t, func(a, b *Backend) bool { return a.Equal(b) })
	checkEqualCoversEveryField(t, func(a, b *L4Service) bool { return a.Equal(b) })
	checkEqualCoversEveryField(t, func(a, b *VirtualHost) bool { return a.Equal(b) })
}
