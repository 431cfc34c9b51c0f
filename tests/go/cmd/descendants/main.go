// descendants serves KV after starting processes of its own that would outlive it, for the
// host's tests that no process outlives its plugin. PLINTH_DESCENDANTS says which:
//
//	fork    a child that holds the plugin's stdout and stderr open and sleeps
//	daemon  a daemon: a child that leaves the plugin's session and process group (setsid)
//	        starts a grandchild and exits, so that the grandchild is an orphan in a session of
//	        its own; the grandchild holds stderr open and sleeps
//
// Every process started appends its pid, one line each, to the file PLINTH_DESCENDANTS_PIDS
// names. They ignore SIGTERM and SIGHUP, as daemons do: only SIGKILL ends them. A Get of the
// key "die" makes the plugin itself exit with status 5.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/plinth-rs/plinth/tests/go/shared"
)

// roleKey names the part a re-executed copy of this binary plays.
const roleKey = "PLINTH_DESCENDANT_ROLE"

type dying struct{ shared.MemKV }

func (d *dying) Get(key string) ([]byte, error) {
	if key == "die" {
		os.Exit(5)
	}
	return d.MemKV.Get(key)
}

func recordPid() {
	path := os.Getenv("PLINTH_DESCENDANTS_PIDS")
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "descendants: cannot record pid in %q: %v\n", path, err)
		os.Exit(1)
	}
	file.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	file.Close()
}

// start runs this binary again as role, sharing stdout and stderr, in a new session when
// setsid is set.
func start(role string, setsid bool) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "descendants: %v\n", err)
		os.Exit(1)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleKey+"="+role)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "descendants: cannot start %s: %v\n", role, err)
		os.Exit(1)
	}
	return cmd
}

func linger() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGHUP)
	recordPid()
	for {
		time.Sleep(time.Hour)
	}
}

func main() {
	switch os.Getenv(roleKey) {
	case "linger":
		linger()
	case "leave":
		// In a session of its own: start the daemon proper and go, orphaning it.
		signal.Ignore(syscall.SIGTERM, syscall.SIGHUP)
		recordPid()
		start("linger", false)
		os.Exit(0)
	}
	if os.Getenv(shared.Handshake.MagicCookieKey) != shared.Handshake.MagicCookieValue {
		fmt.Fprintln(os.Stderr, "This binary is a plugin. These are not meant to be executed directly.")
		os.Exit(1)
	}
	switch mode := os.Getenv("PLINTH_DESCENDANTS"); mode {
	case "fork":
		start("linger", false)
	case "daemon":
		if err := start("leave", true).Wait(); err != nil {
			fmt.Fprintf(os.Stderr, "descendants: the daemon's first stage failed: %v\n", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "descendants: unknown PLINTH_DESCENDANTS %q\n", mode)
		os.Exit(2)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{"kv": &shared.KVPlugin{Impl: &dying{}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
