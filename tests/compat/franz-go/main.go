// franz-go side of the compatibility scenarios.
//
//	franz-go produce BOOTSTRAP TOPIC COUNT [START]
//	franz-go consume BOOTSTRAP TOPIC COUNT TIMEOUT_S
//	franz-go cluster BOOTSTRAP
//
// Prints one JSON object on stdout (see tests/compat/python/confluent_client.py);
// scripts/lib/compat.py judges the outcome.
package main

import (
	"context"
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
)

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
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ClientID("compat-franz-go"))
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
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ClientID("compat-franz-go"))
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			var mu sync.Mutex
			acked := 0
			var wg sync.WaitGroup
			for i := start; i < start+count; i++ {
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
			cl.Close()
			out["acked"] = acked
		}
		out["idempotence"] = true
	} else {
		timeout, _ := strconv.ParseFloat(os.Args[5], 64)
		values := []string{}
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
			kgo.ConsumerGroup("compat-franz-go-"+topic), kgo.DisableAutoCommit(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ClientID("compat-franz-go"))
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
