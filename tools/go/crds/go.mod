// The CustomResourceDefinitions of other projects that the end-to-end tests install on the local cluster, taken
// from the committed CRD files of their Go modules (tools/setup-crds): nothing here is built.
module llmkube.local/tools/crds

go 1.26

require (
	github.com/kedacore/keda/v2 v2.21.0
	github.com/prometheus-operator/prometheus-operator v0.85.0
	sigs.k8s.io/gateway-api v1.6.3
)
