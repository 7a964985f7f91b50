// Command pulumi-resource-kubernetes is the Kubernetes resource plugin, built
// from the github.com/pulumi/pulumi-kubernetes/provider/v4 Go module.
//
// Upstream's main (provider/cmd/pulumi-resource-kubernetes/main.go) embeds
// schema-embed.json and terraform-mapping-embed.json, which its `go generate`
// step writes and which are therefore not in the module zip. tools/setup-pulumi
// runs ./gen against the schema.json and terraform-mapping.json that the module
// does ship to produce those two files next to a staged copy of this file,
// then builds it; this main is otherwise identical to upstream's.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

var providerName = "kubernetes"

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve(providerName, version.Version, pulumiSchema, terraformMapping)
}
