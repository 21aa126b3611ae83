// Sarama side of the compatibility scenarios (same interface as tests/compat/franz-go).
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

	"github.com/IBM/sarama"
)

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/IBM/sarama" {
				return d.Version
			}
		}
	}
	return "unknown"
}

type handler struct {
	mu     sync.Mutex
	values []string
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
// Cleanup commits what was marked (auto-commit is off): the group's position, for the
// resume scenario.
func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error { s.Commit(); return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.values = append(h.values, string(m.Value))
		h.mu.Unlock()
	}
	return nil
}

func (h *handler) len() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.values) }

func main() {
	cmd, seeds := os.Args[1], strings.Split(os.Args[2], ",")
	out := map[string]any{"version": version()}
	errs := []string{}
	cfg := sarama.NewConfig()
	// Kafka 4 removed the old request versions Sarama's default (2.1) would pick.
	cfg.Version = sarama.V3_6_0_0
	cfg.ClientID = "compat-sarama"
	if cmd == "cluster" {
		brokers := []string{}
		admin, err := sarama.NewClusterAdmin(seeds, cfg)
		if err == nil {
			var bs []*sarama.Broker
			bs, _, err = admin.DescribeCluster()
			for _, b := range bs {
				brokers = append(brokers, b.Addr())
			}
			admin.Close()
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
		cfg.Producer.Idempotent = true
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		cfg.Net.MaxOpenRequests = 1
		cfg.Producer.Return.Successes = true
		cfg.Producer.Return.Errors = true
		p, err := sarama.NewAsyncProducer(seeds, cfg)
		acked := 0
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			done := make(chan struct{})
			go func() {
				for i := 0; i < count; i++ {
					select {
					case <-p.Successes():
						acked++
					case e := <-p.Errors():
						if len(errs) < 10 {
							errs = append(errs, e.Error())
						}
					}
				}
				close(done)
			}()
			for i := start; i < start+count; i++ {
				p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprintf("v-%d", i))}
			}
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				errs = append(errs, "not every record answered within 60 s")
			}
			p.AsyncClose()
		}
		out["acked"] = acked
		out["idempotence"] = true
	} else {
		timeout, _ := strconv.ParseFloat(os.Args[5], 64)
		cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		cfg.Consumer.Offsets.AutoCommit.Enable = false
		h := &handler{}
		g, err := sarama.NewConsumerGroup(seeds, "compat-sarama-"+topic, cfg)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				for ctx.Err() == nil {
					if err := g.Consume(ctx, []string{topic}, h); err != nil && len(errs) < 10 {
						errs = append(errs, err.Error())
					}
				}
			}()
			deadline := time.Now().Add(time.Duration(timeout * float64(time.Second)))
			for h.len() < count && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(2 * time.Second) // a duplicate right after the last record is seen
			cancel()
			g.Close()
		}
		h.mu.Lock()
		out["values"] = append([]string{}, h.values...)
		h.mu.Unlock()
	}
	out["errors"] = errs
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
