// netrpc-struct serves "records" over netrpc: methods whose arguments and results are structs
// holding every kind a host must handle (strings, ints, uints, floats, bools, []byte, slices,
// maps, a nested struct, a slice of structs).
//
// Tree returns a recursive type, which a host that cannot represent one must refuse cleanly.
package main

import (
	"fmt"
	"net/rpc"
	"strings"
	"sync"

	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

type Inner struct {
	ID   uint32
	Note string
}

type Record struct {
	Name   string
	Tags   []string
	Score  float64
	Count  int64
	Active bool
	Attrs  map[string]string
	Data   []byte
	Nested Inner
}

type Query struct {
	Prefix string
	Limit  int
}

type Node struct {
	Name     string
	Children []Node
}

type records struct {
	mu   sync.Mutex
	list []Record
}

// Store keeps a record and answers how many are stored.
func (r *records) Store(record Record, resp *int) error {
	if record.Name == "" {
		return fmt.Errorf("a record needs a name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	record.Nested.Note = strings.ToUpper(record.Nested.Note)
	r.list = append(r.list, record)
	*resp = len(r.list)
	return nil
}

// Find returns the records whose name starts with the prefix, at most Limit (0: all).
func (r *records) Find(query Query, resp *[]Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	found := []Record{}
	for _, record := range r.list {
		if strings.HasPrefix(record.Name, query.Prefix) {
			found = append(found, record)
			if query.Limit > 0 && len(found) == query.Limit {
				break
			}
		}
	}
	*resp = found
	return nil
}

// Tree returns a two-level tree.
func (r *records) Tree(args interface{}, resp *Node) error {
	*resp = Node{Name: "root", Children: []Node{{Name: "leaf"}}}
	return nil
}

type recordsPlugin struct{}

func (recordsPlugin) Server(*plugin.MuxBroker) (interface{}, error) { return &records{}, nil }

func (recordsPlugin) Client(*plugin.MuxBroker, *rpc.Client) (interface{}, error) {
	return nil, fmt.Errorf("this fixture only serves")
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"records": recordsPlugin{}},
	})
}
