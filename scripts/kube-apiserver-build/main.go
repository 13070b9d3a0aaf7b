// Command kube-apiserver is the upstream API server, linked from the Kubernetes Go modules
// at the version pinned in go.mod. kubepci's end-to-end tests run it against a local etcd so
// that admission policies, webhooks and audit are exercised by the real thing, not a mock.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones need the zone database inside the binary.

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // allows --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // build version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
