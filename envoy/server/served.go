package server

import "slices"

// OnServed registers f to be called (outside the server's lock, in order)
// each time a fleet is served a snapshot with a new content version, before
// any proxy acknowledged it: the fleet's status can say what it waits for.
func (s *Server) OnServed(f func(fleet string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onServed = append(s.onServed, f)
}

func (s *Server) servedNew(fleet string) {
	s.mu.Lock()
	hooks := slices.Clone(s.onServed)
	s.mu.Unlock()
	for _, f := range hooks {
		f(fleet)
	}
}
