package model

import (
	"fmt"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRegexProgramSize is Envoy's default limit on the RE2 program size of a
// regular expression (runtime key re2.max_program_size.error_level): a larger
// one makes the proxy refuse the whole resource that holds it.
const MaxRegexProgramSize = 100

// ValidateRegex refuses what Envoy's RE2 refuses: invalid syntax, and
// programs over MaxRegexProgramSize. The size is estimated from Go's
// compilation (same syntax, same simplification) the way RE2 counts it:
// RE2 works on UTF-8 bytes, so a character class costs one instruction per
// byte range of its UTF-8 encoding (shared suffixes counted once) plus the
// alternations joining them, and an unanchored program starts with a .*?
// loop. The estimate errs on the large side: refusing a regex RE2 would have
// taken is safe, taking one it refuses is not.
func ValidateRegex(expr string) error {
	if !utf8.ValidString(expr) {
		return fmt.Errorf("not valid UTF-8")
	}
	// RE2 only learned (?<name>) recently; Go accepts it. Ask for (?P<name>).
	if strings.Contains(expr, "(?<") {
		return fmt.Errorf("use (?P<name>...) for named groups")
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return err
	}
	n, err := RegexProgramSize(re)
	if err != nil {
		return err
	}
	if n > MaxRegexProgramSize {
		return fmt.Errorf("too complex (RE2 program size about %d, over the proxy's limit of %d)", n, MaxRegexProgramSize)
	}
	return nil
}

// RegexProgramSize estimates the RE2 program size of a parsed expression.
func RegexProgramSize(re *syntax.Regexp) (int, error) {
	anchored := re.Op == syntax.OpBeginText || (re.Op == syntax.OpConcat && len(re.Sub) > 0 && re.Sub[0].Op == syntax.OpBeginText)
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, err
	}
	size := 0
	for i := range prog.Inst {
		in := &prog.Inst[i]
		switch in.Op {
		case syntax.InstRune:
			if len(in.Rune) == 1 && syntax.Flags(in.Arg)&syntax.FoldCase != 0 {
				size += foldedRuneCost(in.Rune[0])
			} else {
				size += classCost(in.Rune)
			}
		case syntax.InstRune1:
			size += classCost([]rune{in.Rune[0], in.Rune[0]})
		case syntax.InstRuneAny:
			size += classCost([]rune{0, utf8.MaxRune})
		case syntax.InstRuneAnyNotNL:
			size += classCost([]rune{0, '\n' - 1, '\n' + 1, utf8.MaxRune})
		case syntax.InstNop:
			// RE2 flattens these away.
		default:
			size++
		}
	}
	if !anchored {
		size += 3 // the .*? loop of the unanchored start
	}
	return size, nil
}

// foldedRuneCost is a case-insensitive single rune: RE2 folds ASCII letters
// in one instruction; anything else becomes a class of its case variants.
func foldedRuneCost(r rune) int {
	if r < utf8.RuneSelf {
		return 1
	}
	var class []rune
	for f := r; ; {
		class = append(class, f, f)
		if f = unicode.SimpleFold(f); f == r {
			break
		}
	}
	return classCost(class)
}

// classCost is the number of RE2 instructions of a rune class given as
// [lo, hi, lo, hi...] pairs.
func classCost(pairs []rune) int {
	var seqs [][][2]byte
	// RE2 compiles all of 80-10FFFF (as in . and [^a]) to three loose
	// sequences of six instructions.
	allHigh, leading, insts := false, 0, 0
	for i := 0; i+1 < len(pairs); i += 2 {
		lo, hi := pairs[i], pairs[i+1]
		if lo <= utf8.RuneSelf && hi == utf8.MaxRune {
			allHigh = true
			hi = utf8.RuneSelf - 1
		}
		utf8Sequences(lo, hi, &seqs)
	}
	if allHigh {
		leading, insts = 3, 6
	}
	if len(seqs) == 0 && !allHigh {
		return 1 // an empty class is a fail instruction
	}
	suffixes := map[string]bool{}
	for _, s := range seqs {
		for i := 1; i < len(s); i++ {
			suffixes[fmt.Sprint(s[i:])] = true
		}
	}
	leading += len(seqs)
	return insts + len(seqs) + len(suffixes) + leading - 1
}

// utf8Sequences splits [lo, hi] into ranges whose UTF-8 encodings are byte
// ranges position by position, as RE2's compiler does.
func utf8Sequences(lo, hi rune, out *[][][2]byte) {
	// Surrogates have no UTF-8 encoding; RE2 leaves them out too.
	if lo < 0xd800 && hi >= 0xd800 {
		utf8Sequences(lo, 0xd7ff, out)
		utf8Sequences(0xe000, hi, out)
		return
	}
	if lo >= 0xd800 && lo <= 0xdfff {
		lo = 0xe000
	}
	if lo > hi {
		return
	}
	for _, b := range []rune{0x7f, 0x7ff, 0xffff} {
		if lo <= b && b < hi {
			utf8Sequences(lo, b, out)
			utf8Sequences(b+1, hi, out)
			return
		}
	}
	if hi < utf8.RuneSelf {
		*out = append(*out, [][2]byte{{byte(lo), byte(hi)}})
		return
	}
	for i := 1; i < utf8.UTFMax; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				utf8Sequences(lo, lo|m, out)
				utf8Sequences((lo|m)+1, hi, out)
				return
			}
			if hi&m != m {
				utf8Sequences(lo, (hi&^m)-1, out)
				utf8Sequences(hi&^m, hi, out)
				return
			}
		}
	}
	var a, b [utf8.UTFMax]byte
	n := utf8.EncodeRune(a[:], lo)
	utf8.EncodeRune(b[:], hi)
	seq := make([][2]byte, n)
	for i := range n {
		seq[i] = [2]byte{a[i], b[i]}
	}
	*out = append(*out, seq)
}
