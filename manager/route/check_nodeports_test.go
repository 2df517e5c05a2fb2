package route

import (
	"strings"
	"testing"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

func TestCheckRuleForNodePortRange(t *testing.T) {
	def := &v1.Tenant{}
	narrow := &v1.Tenant{Spec: v1.TenantSpec{NodePortRange: &v1.PortRange{Min: 31000, Max: 31010}}}
	redirect := v1.RouteFilter{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{Scheme: "https"}}
	for name, c := range map[string]struct {
		t    *v1.Tenant
		rule v1.RouteRule
		want string
	}{
		"default range":          {def, v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30000}, {NodePort: 32767}}}, ""},
		"admin port":             {def, v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30000}, {ServiceName: "x", NodePort: 9901}}}, v1.ReasonInvalidBackend},
		"above the range":        {def, v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 32768}}}, v1.ReasonInvalidBackend},
		"tenant range":           {narrow, v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 31010}}}, ""},
		"outside tenant range":   {narrow, v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30000}}}, v1.ReasonInvalidBackend},
		"redirect ignores ports": {def, v1.RouteRule{Filters: []v1.RouteFilter{redirect}, Backends: []v1.RouteBackend{{NodePort: 22}}}, ""},
		"other problems first":   {def, v1.RouteRule{}, v1.ReasonInvalidBackend},
	} {
		got, msg := CheckRuleFor(c.t, &c.rule)
		if got != c.want {
			t.Errorf("%s: %q (%s), want %q", name, got, msg, c.want)
		}
		if got != "" && c.want == v1.ReasonInvalidBackend && len(c.rule.Backends) > 0 && !strings.Contains(msg, "node port range") {
			t.Errorf("%s: message %q does not name the range", name, msg)
		}
	}
}
