// counter-plugin counts through the host's AddHelper, which it dials through the broker.
package main

import (
	"sync"

	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

type counter struct {
	mu     sync.Mutex
	counts map[string]int64
}

func (c *counter) Put(key string, value int64, helper shared.AddHelper) error {
	c.mu.Lock()
	current := c.counts[key]
	c.mu.Unlock()
	sum, err := helper.Sum(current, value)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[key] = sum
	return nil
}

func (c *counter) Get(key string) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key], nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins: plugin.PluginSet{
			"counter": &shared.CounterPlugin{Impl: &counter{counts: map[string]int64{}}},
		},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}
