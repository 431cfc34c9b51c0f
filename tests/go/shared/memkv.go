package shared

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// MemKV is an in-memory KV with a few keys that misbehave on purpose, for fault tests:
// `sleep:<duration>` sleeps before answering, `exit:<code>` exits the process mid-call.
type MemKV struct {
	// Prefix is prepended to every value returned by Get (the multi-version fixture uses it to
	// show which version answered).
	Prefix string

	mu     sync.Mutex
	values map[string][]byte
}

// Get returns the value under key.
func (m *MemKV) Get(key string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(key, "sleep:"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return nil, err
		}
		time.Sleep(d)
		return []byte(m.Prefix + "slept"), nil
	}
	if rest, ok := strings.CutPrefix(key, "exit:"); ok {
		var code int
		fmt.Sscan(rest, &code)
		os.Exit(code)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	value, ok := m.values[key]
	if !ok {
		return nil, fmt.Errorf("no value stored under key %q", key)
	}
	return append([]byte(m.Prefix), value...), nil
}

// Put stores value under key.
func (m *MemKV) Put(key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.values == nil {
		m.values = map[string][]byte{}
	}
	m.values[key] = append([]byte(nil), value...)
	return nil
}
