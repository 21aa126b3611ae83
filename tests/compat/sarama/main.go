// Sarama side of the compatibility scenarios (same interface and KDP_COMPAT_* settings as
// tests/compat/franz-go).
package main

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

// scramClient adapts xdg-go/scram to sarama.SCRAMClient (Sarama brings no SCRAM
// implementation of its own).
type scramClient struct {
	gen  scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	cl, err := c.gen.NewClient(user, password, authzID)
	if err == nil {
		c.conv = cl.NewConversation()
	}
	return err
}
func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }
func (c *scramClient) Done() bool                            { return c.conv.Done() }

// configure applies SASL over TLS when KDP_COMPAT_SASL is set.
func configure(cfg *sarama.Config) {
	s := os.Getenv("KDP_COMPAT_SASL")
	if s == "" {
		return
	}
	parts := strings.SplitN(s, ":", 3)
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Handshake = true
	cfg.Net.SASL.User, cfg.Net.SASL.Password = parts[1], parts[2]
	if parts[0] == "SCRAM-SHA-512" {
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{gen: sha512.New} }
	} else {
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{gen: sha256.New} }
	}
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(os.Getenv("KDP_COMPAT_CA")); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	cfg.Net.TLS.Enable = true
	cfg.Net.TLS.Config = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func envFloat(name string) float64 {
	v, _ := strconv.ParseFloat(os.Getenv(name), 64)
	return v
}

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

func (h *handler) Setup(sarama.ConsumerGroupSession) error { return nil }

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
	configure(cfg)
	if os.Getenv("KDP_COMPAT_DEBUG") == "1" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
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
		if ms := envFloat("KDP_COMPAT_REQUEST_TIMEOUT_MS"); ms > 0 {
			// Producer.Timeout is the wait the request asks of the broker; Net.ReadTimeout
			// is when Sarama gives up on the connection (and retries the batch).
			cfg.Producer.Timeout = time.Duration(ms) * time.Millisecond
			cfg.Net.ReadTimeout = time.Duration(ms+500) * time.Millisecond
			cfg.Producer.Retry.Max = 50
			cfg.Producer.Retry.Backoff = 100 * time.Millisecond
		}
		txnID := os.Getenv("KDP_COMPAT_TXN_ID")
		if txnID != "" {
			cfg.Producer.Transaction.ID = txnID
		}
		rate := envFloat("KDP_COMPAT_RATE")
		p, err := sarama.NewAsyncProducer(seeds, cfg)
		if err == nil && txnID != "" {
			err = p.BeginTxn()
		}
		acked := 0
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			done := make(chan struct{})
			var mu sync.Mutex
			go func() {
				for i := 0; i < count; i++ {
					select {
					case <-p.Successes():
						acked++
					case e := <-p.Errors():
						mu.Lock()
						if len(errs) < 10 {
							errs = append(errs, e.Error())
						}
						mu.Unlock()
					}
				}
				close(done)
			}()
			t0 := time.Now()
			for i := start; i < start+count; i++ {
				if rate > 0 {
					time.Sleep(time.Until(t0.Add(time.Duration(float64(i-start) / rate * float64(time.Second)))))
				}
				// Stamped here, as the Java client stamps at send(): without a timestamp Sarama
				// stamps each record when it builds a batch, again for a retry, so a retried
				// batch would differ from the original (another CRC).
				p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprintf("v-%d", i)),
					Timestamp: time.Now()}
			}
			select {
			case <-done:
			case <-time.After(120 * time.Second):
				mu.Lock()
				errs = append(errs, "not every record answered within 120 s")
				mu.Unlock()
			}
			if txnID != "" {
				state := "committed"
				var err error
				if os.Getenv("KDP_COMPAT_TXN_ABORT") == "1" {
					state, err = "aborted", p.AbortTxn()
				} else {
					err = p.CommitTxn()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, "end transaction: "+err.Error())
					mu.Unlock()
					state = "failed"
				}
				out["transaction"] = state
			}
			p.AsyncClose()
		}
		out["acked"] = acked
		out["idempotence"] = true
	} else {
		timeout, _ := strconv.ParseFloat(os.Args[5], 64)
		cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		cfg.Consumer.Offsets.AutoCommit.Enable = false
		out["isolation"] = "read_uncommitted"
		if os.Getenv("KDP_COMPAT_READ_COMMITTED") == "1" {
			cfg.Consumer.IsolationLevel = sarama.ReadCommitted
			out["isolation"] = "read_committed"
		}
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
