// forwardclient sends records to a Forward protocol server on a unix socket
// with fluent-logger-golang (the library Docker's fluentd driver uses) and
// checks every acknowledgement.
//
//	forwardclient -socket PATH -mode message|forward|packed -n N -tag TAG
//
// message: the library's own client (Message mode, EventTime, RequestAck).
// forward, packed: the library's Forward/Entry encoders for the Forward and
// PackedForward modes, with a chunk option, and its AckResp decoder.
// Exits non-zero with a reason on stderr if anything is not acknowledged.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/tinylib/msgp/msgp"
)

func main() {
	socket := flag.String("socket", "", "unix socket path")
	mode := flag.String("mode", "message", "message, forward or packed")
	n := flag.Int("n", 10, "records to send")
	batch := flag.Int("batch", 100, "records per Forward/PackedForward frame")
	tag := flag.String("tag", "go.test", "tag")
	retries := flag.Int("retries", 1, "message: attempts per record (the library's MaxRetry)")
	interval := flag.Duration("interval", 0, "message: pause between records")
	flag.Parse()
	var err error
	switch *mode {
	case "message":
		err = sendMessages(*socket, *tag, *n, *retries, *interval)
	case "forward", "packed":
		err = sendBatches(*socket, *tag, *n, *batch, *mode == "packed")
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwardclient:", err)
		os.Exit(1)
	}
}

func record(mode string, i int) map[string]interface{} {
	return map[string]interface{}{
		"message": fmt.Sprintf("go %s %d", mode, i),
		"n":       i,
		"level":   "warn",
	}
}

func sendMessages(socket, tag string, n, retries int, interval time.Duration) error {
	logger, err := fluent.New(fluent.Config{
		FluentNetwork:      "unix",
		FluentSocketPath:   socket,
		RequestAck:         true,
		SubSecondPrecision: true,
		Timeout:            10 * time.Second,
		WriteTimeout:       10 * time.Second,
		MaxRetry:           retries,
		RetryWait:          100,
	})
	if err != nil {
		return err
	}
	defer logger.Close()
	for i := 0; i < n; i++ {
		// With RequestAck, Post returns only once the server acknowledged.
		if err := logger.Post(tag, record("message", i)); err != nil {
			return fmt.Errorf("post %d: %w", i, err)
		}
		time.Sleep(interval)
	}
	return nil
}

func sendBatches(socket, tag string, n, batch int, packed bool) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	reader := msgp.NewReader(conn)
	mode := "forward"
	if packed {
		mode = "packed"
	}
	for start, frame := 0, 0; start < n; start, frame = start+batch, frame+1 {
		var entries []fluent.Entry
		for i := start; i < n && i < start+batch; i++ {
			entries = append(entries, fluent.Entry{Time: time.Now().Unix(), Record: record(mode, i)})
		}
		chunk := fmt.Sprintf("chunk-%d-%d", os.Getpid(), frame)
		option := map[string]string{"chunk": chunk, "size": fmt.Sprint(len(entries))}
		var data []byte
		if packed {
			var stream []byte
			for _, e := range entries {
				if stream, err = e.MarshalMsg(stream); err != nil {
					return err
				}
			}
			data = msgp.AppendArrayHeader(nil, 3)
			data = msgp.AppendString(data, tag)
			data = msgp.AppendBytes(data, stream)
			if data, err = msgp.AppendIntf(data, option); err != nil {
				return err
			}
		} else {
			fwd := fluent.Forward{Tag: tag, Entries: entries, Option: option}
			if data, err = fwd.MarshalMsg(nil); err != nil {
				return err
			}
		}
		if _, err := conn.Write(data); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var ack fluent.AckResp
		if err := ack.DecodeMsg(reader); err != nil {
			return fmt.Errorf("reading ack of %s: %w", chunk, err)
		}
		if ack.Ack != chunk {
			return fmt.Errorf("ack %q for chunk %q", ack.Ack, chunk)
		}
	}
	return nil
}
