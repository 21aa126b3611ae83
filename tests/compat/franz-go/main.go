// franz-go side of the compatibility scenarios.
//
//	franz-go produce BOOTSTRAP TOPIC COUNT [START]
//	franz-go consume BOOTSTRAP TOPIC COUNT TIMEOUT_S
//	franz-go cluster BOOTSTRAP
//
// Prints one JSON object on stdout (see tests/compat/python/confluent_client.py);
// scripts/lib/compat.py judges the outcome. The scenario's settings come from the
// KDP_COMPAT_* environment variables described there.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// common: the client id, and SASL over TLS when KDP_COMPAT_SASL is set.
func common(seeds []string) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ClientID("compat-franz-go")}
	if s := os.Getenv("KDP_COMPAT_SASL"); s != "" {
		parts := strings.SplitN(s, ":", 3)
		auth := scram.Auth{User: parts[1], Pass: parts[2]}
		if parts[0] == "SCRAM-SHA-512" {
			opts = append(opts, kgo.SASL(auth.AsSha512Mechanism()))
		} else {
			opts = append(opts, kgo.SASL(auth.AsSha256Mechanism()))
		}
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(os.Getenv("KDP_COMPAT_CA")); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	return opts
}

func envFloat(name string) float64 {
	v, _ := strconv.ParseFloat(os.Getenv(name), 64)
	return v
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/twmb/franz-go" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func main() {
	cmd, seeds := os.Args[1], strings.Split(os.Args[2], ",")
	out := map[string]any{"version": version()}
	var errs []string
	if cmd == "cluster" {
		// franz-go has no DescribeCluster helper in kgo: the brokers of a Metadata
		// response, which is what the client itself connects to.
		brokers := []string{}
		cl, err := kgo.NewClient(common(seeds)...)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var resp *kmsg.MetadataResponse
			resp, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
			cancel()
			if err == nil {
				for _, b := range resp.Brokers {
					brokers = append(brokers, fmt.Sprintf("%s:%d", b.Host, b.Port))
				}
			}
			cl.Close()
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
		out["brokers"] = brokers
		out["errors"] = errs
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return
	}
	topic := os.Args[3]
	count, _ := strconv.Atoi(os.Args[4])
	start := 0
	if cmd == "produce" && len(os.Args) > 5 {
		start, _ = strconv.Atoi(os.Args[5])
	}
	if cmd == "produce" {
		// Idempotence is franz-go's default; acks=all is required for it.
		opts := append(common(seeds), kgo.RequiredAcks(kgo.AllISRAcks()))
		if ms := envFloat("KDP_COMPAT_REQUEST_TIMEOUT_MS"); ms > 0 {
			// The request asks the broker for ms; the client gives up 500 ms later and
			// retries (franz-go retries produce requests until the delivery timeout).
			opts = append(opts, kgo.ProduceRequestTimeout(time.Duration(ms)*time.Millisecond),
				kgo.RequestTimeoutOverhead(500*time.Millisecond), kgo.RecordDeliveryTimeout(120*time.Second))
		}
		txnID := os.Getenv("KDP_COMPAT_TXN_ID")
		if txnID != "" {
			opts = append(opts, kgo.TransactionalID(txnID))
		}
		rate := envFloat("KDP_COMPAT_RATE")
		cl, err := kgo.NewClient(opts...)
		if err == nil && txnID != "" {
			err = cl.BeginTransaction()
		}
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			var mu sync.Mutex
			acked := 0
			var wg sync.WaitGroup
			t0 := time.Now()
			for i := start; i < start+count; i++ {
				if rate > 0 {
					time.Sleep(time.Until(t0.Add(time.Duration(float64(i-start) / rate * float64(time.Second)))))
				}
				wg.Add(1)
				cl.Produce(context.Background(), &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf("v-%d", i))},
					func(_ *kgo.Record, err error) {
						mu.Lock()
						if err == nil {
							acked++
						} else if len(errs) < 10 {
							errs = append(errs, err.Error())
						}
						mu.Unlock()
						wg.Done()
					})
			}
			wg.Wait()
			if txnID != "" {
				end, state := kgo.TryCommit, "committed"
				if os.Getenv("KDP_COMPAT_TXN_ABORT") == "1" {
					end, state = kgo.TryAbort, "aborted"
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := cl.EndTransaction(ctx, end); err != nil {
					errs = append(errs, "end transaction: "+err.Error())
					state = "failed"
				}
				cancel()
				out["transaction"] = state
			}
			cl.Close()
			out["acked"] = acked
		}
		out["idempotence"] = true
	} else {
		timeout, _ := strconv.ParseFloat(os.Args[5], 64)
		values := []string{}
		isolation, level := "read_uncommitted", kgo.ReadUncommitted()
		if os.Getenv("KDP_COMPAT_READ_COMMITTED") == "1" {
			isolation, level = "read_committed", kgo.ReadCommitted()
		}
		out["isolation"] = isolation
		cl, err := kgo.NewClient(append(common(seeds), kgo.ConsumeTopics(topic),
			kgo.ConsumerGroup("compat-franz-go-"+topic), kgo.DisableAutoCommit(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(level))...)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			deadline := time.Now().Add(time.Duration(timeout * float64(time.Second)))
			linger := time.Time{}
			for {
				now := time.Now()
				if now.After(deadline) || (!linger.IsZero() && now.After(linger)) {
					break
				}
				end := deadline
				if !linger.IsZero() {
					end = linger
				}
				ctx, cancel := context.WithDeadline(context.Background(), end)
				fs := cl.PollFetches(ctx)
				cancel()
				fs.EachError(func(_ string, _ int32, err error) {
					if err != context.DeadlineExceeded && len(errs) < 10 {
						errs = append(errs, err.Error())
					}
				})
				fs.EachRecord(func(r *kgo.Record) { values = append(values, string(r.Value)) })
				if len(values) >= count && linger.IsZero() {
					// Linger so a duplicate right after the last expected record is seen.
					linger = time.Now().Add(2 * time.Second)
				}
			}
			// The group's position, for the resume scenario.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				errs = append(errs, "commit: "+err.Error())
			}
			cancel()
			cl.Close()
		}
		out["values"] = values
	}
	out["errors"] = errs
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
