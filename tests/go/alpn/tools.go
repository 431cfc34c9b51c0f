//go:build tools

// Package alpn only pins the fixture it rebuilds; see go.mod.
package alpn

import _ "github.com/plinth-rs/plinth/tests/go/cmd/kv-plugin"
