// gelfrecv: Graylog's own GELF UDP decoder (go-gelf's Reader, which
// reassembles chunks and inflates gzip/zlib) as a test peer for weir.
//
// It listens on the UDP address given as the first argument (default
// 127.0.0.1:0); with "default-buffer" as the second argument it keeps the
// kernel's default socket receive buffer (gelf.NewReader exactly as
// Graylog's library ships it: what a burst test must survive). It prints "LISTENING <addr>" on the first line, then one JSON
// object per decoded message: the standard fields under their GELF names
// plus every additional field. A message it cannot decode prints
// {"error": "..."} instead, so a test sees the failure.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o gelfrecv main.go
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
	"syscall"
	"unsafe"

	"github.com/Graylog2/go-gelf/gelf"
)

// newReader is gelf.NewReader with a 16 MiB socket receive buffer. A
// 128-chunk message arrives as a ~180 KB burst on loopback, more than the
// kernel's default buffer holds while this process decodes the previous
// one (Graylog's own input asks for a larger buffer too). go-gelf keeps
// its socket in an unexported field, so it is set by reflection; the
// decoding is go-gelf's, unchanged.
func newReader(addr string) (*gelf.Reader, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, err
	}
	const size = 16 << 20
	if raw, err := conn.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			// SO_RCVBUFFORCE passes net.core.rmem_max (we run as root).
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size) != nil {
				conn.SetReadBuffer(size)
			}
		})
	}
	r := new(gelf.Reader)
	f := reflect.ValueOf(r).Elem().FieldByName("conn")
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(net.Conn(conn)))
	return r, nil
}

func main() {
	addr := "127.0.0.1:0"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	var r *gelf.Reader
	var err error
	if len(os.Args) > 2 && os.Args[2] == "default-buffer" {
		r, err = gelf.NewReader(addr)
	} else {
		r, err = newReader(addr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gelfrecv:", err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "LISTENING %s\n", r.Addr())
	out.Flush()
	enc := json.NewEncoder(out)
	for {
		msg, err := r.ReadMessage()
		if err != nil {
			enc.Encode(map[string]string{"error": err.Error()})
			out.Flush()
			continue
		}
		line := map[string]interface{}{
			"version":       msg.Version,
			"host":          msg.Host,
			"short_message": msg.Short,
			"timestamp":     msg.TimeUnix,
			"level":         msg.Level,
		}
		if msg.Full != "" {
			line["full_message"] = msg.Full
		}
		for k, v := range msg.Extra {
			line[k] = v
		}
		enc.Encode(line)
		out.Flush()
	}
}
