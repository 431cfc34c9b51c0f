// tcp-relay runs the plugin named in its arguments with its own environment, reads that
// plugin's handshake, and re-announces it on a TCP port on 127.0.0.1 that relays bytes to the
// plugin's Unix socket — so a host meets a real go-plugin server (TLS included) over TCP.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tcp-relay PLUGIN [ARGS...]")
		os.Exit(2)
	}
	child := exec.Command(os.Args[1], os.Args[2:]...)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		fail(err)
	}
	if err := child.Start(); err != nil {
		fail(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		fail(fmt.Errorf("reading the plugin's handshake: %w", err))
	}
	fields := strings.Split(strings.TrimSpace(line), "|")
	if len(fields) < 4 || fields[2] != "unix" {
		fail(fmt.Errorf("unexpected handshake %q", line))
	}
	target := fields[3]
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fields[2] = "tcp"
	fields[3] = listener.Addr().String()
	fmt.Println(strings.Join(fields, "|"))
	os.Stdout.Sync()
	go func() {
		child.Wait()
		os.Exit(0)
	}()
	for {
		conn, err := listener.Accept()
		if err != nil {
			fail(err)
		}
		go relay(conn, target)
	}
}

func relay(conn net.Conn, target string) {
	defer conn.Close()
	upstream, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	defer upstream.Close()
	go io.Copy(upstream, conn)
	io.Copy(conn, upstream)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tcp-relay:", err)
	os.Exit(1)
}
