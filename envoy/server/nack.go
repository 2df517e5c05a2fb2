package server

// OnNACK registers f to be called (outside the server's lock, in order) each
// time a proxy of a fleet refuses a configuration, with the refusal. The
// snapshot builder uses it to find and hold back the object that caused it.
func (s *Server) OnNACK(f func(fleet string, n NACK)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onNACK = append(s.onNACK, f)
}

func (s *Server) nacked(fleet string, n NACK) {
	if fleet == "" {
		return
	}
	s.mu.Lock()
	hooks := append([]func(string, NACK){}, s.onNACK...)
	s.mu.Unlock()
	for _, f := range hooks {
		f(fleet, n)
	}
}
