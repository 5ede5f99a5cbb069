// etcd for the Kubernetes testbed: one member, built from etcd's embed package at the version Kubernetes
// pins (build.sh). It takes the few flags scripts/kubernetes_testbed.py passes.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/embed"
)

func urls(s string) []url.URL {
	u, err := url.Parse(s)
	if err != nil {
		log.Fatalf("bad URL %q: %v", s, err)
	}
	return []url.URL{*u}
}

func main() {
	cfg := embed.NewConfig()
	fs := flag.NewFlagSet("etcd", flag.ExitOnError)
	name := fs.String("name", "default", "member name")
	dataDir := fs.String("data-dir", "default.etcd", "data directory")
	lc := fs.String("listen-client-urls", "http://127.0.0.1:2379", "")
	ac := fs.String("advertise-client-urls", "", "")
	lp := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "")
	ap := fs.String("initial-advertise-peer-urls", "", "")
	ic := fs.String("initial-cluster", "", "")
	quota := fs.Int64("quota-backend-bytes", 0, "")
	logLevel := fs.String("log-level", "warn", "")
	noFsync := fs.Bool("unsafe-no-fsync", false, "disables fsync, unsafe, for tests")
	showVersion := fs.Bool("version", false, "print version")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Printf("etcd Version: %s (embed)\n", version.Version)
		return
	}
	if *ac == "" {
		*ac = *lc
	}
	if *ap == "" {
		*ap = *lp
	}
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = urls(*lc), urls(*ac)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = urls(*lp), urls(*ap)
	if *ic == "" {
		*ic = cfg.Name + "=" + *ap
	}
	cfg.InitialCluster = *ic
	cfg.QuotaBackendBytes = *quota
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = *noFsync
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	log.Printf("etcd %s ready on %s", version.Version, *lc)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-e.Err():
		log.Fatal(err)
	case <-sig:
	}
}
