package health

// Tracked is how many GPUs and devcoredumps the Monitor keeps state for,
// for the tests that bound its memory.
func (m *Monitor) Tracked() (gpus, dumps int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.gpus), len(m.dumps)
}
