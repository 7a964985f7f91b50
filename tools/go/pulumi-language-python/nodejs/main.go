// Command pulumi-language-nodejs is a code-generation-only Node.js language host:
// it serves GeneratePackage from pkg/v3's Node.js code generator, so that
// `pulumi package gen-sdk --language nodejs` writes a TypeScript SDK of a
// package (ours: the llmkube components). Upstream's Node.js host module is
// refused by the Go module proxy reachable here, so running Node.js programs
// is not possible; every other call is Unimplemented, which the engine reports
// as "not supported". It shares its code generation glue (../langhost) with
// the Python host of this module.
package main

import (
	"context"
	"flag"

	"github.com/pulumi/pulumi/pkg/v3/codegen/nodejs"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
	"llmkube.local/tools/pulumi-language-python/langhost"
)

func main() {
	// Flags the engine may pass to language hosts; accepted for compatibility.
	flag.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	flag.String("root", "", "Project root path")
	flag.String("typescript", "", "Unused: this host only generates code")
	flag.String("packagemanager", "", "Unused: this host only generates code")
	flag.Parse()

	langhost.Serve(&codegenHost{})
}

type codegenHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
}

func (h *codegenHost) Handshake(
	context.Context, *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *codegenHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// GeneratePackage writes a TypeScript SDK with pkg/v3's Node.js generator.
func (h *codegenHost) GeneratePackage(
	ctx context.Context, req *pulumirpc.GeneratePackageRequest,
) (*pulumirpc.GeneratePackageResponse, error) {
	return langhost.GeneratePackage(ctx, req, func(
		pkg *schema.Package, req *pulumirpc.GeneratePackageRequest, loader schema.ReferenceLoader,
	) (map[string][]byte, error) {
		return nodejs.GeneratePackage("pulumi-language-nodejs", pkg, req.GetExtraFiles(),
			req.GetLocalDependencies(), req.GetLocal(), loader)
	})
}
