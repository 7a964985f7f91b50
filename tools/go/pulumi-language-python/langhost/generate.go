// Package langhost is what our language hosts share: serving the gRPC protocol
// (Serve) and the GeneratePackage call (GeneratePackage), which binds
// the schema the engine sends (resolving referenced packages through the
// engine's schema loader), runs one of pkg/v3's SDK generators and writes the
// files. pkg/v3 is pinned to the CLI's version (../../pulumi/go.mod), so an SDK
// is what the CLI's own release would generate.
package langhost

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	codegenrpc "github.com/pulumi/pulumi/sdk/v3/proto/go/codegen"
)

// Generator is one language's SDK generator (pkg/v3/codegen/<language>), its arguments bound to a request.
type Generator func(
	pkg *schema.Package, req *pulumirpc.GeneratePackageRequest, loader schema.ReferenceLoader,
) (map[string][]byte, error)

// GeneratePackage serves pulumirpc.LanguageRuntime.GeneratePackage with generate. Schema problems come back as
// diagnostics, as upstream's hosts return them.
func GeneratePackage(
	_ context.Context, req *pulumirpc.GeneratePackageRequest, generate Generator,
) (*pulumirpc.GeneratePackageResponse, error) {
	client, err := schema.NewLoaderClient(req.GetLoaderTarget())
	if err != nil {
		return nil, fmt.Errorf("connecting to the engine's schema loader: %w", err)
	}
	defer client.Close()
	loader := schema.NewCachedLoader(client)

	var spec schema.PackageSpec
	if err := json.Unmarshal([]byte(req.GetSchema()), &spec); err != nil {
		return nil, fmt.Errorf("parsing the package schema: %w", err)
	}
	pkg, diags, err := schema.BindSpec(spec, loader, schema.ValidationOptions{})
	if err != nil {
		return nil, err
	}
	var out []*codegenrpc.Diagnostic
	for _, d := range diags {
		out = append(out, &codegenrpc.Diagnostic{
			Severity: codegenrpc.DiagnosticSeverity(d.Severity), Summary: d.Summary, Detail: d.Detail,
		})
	}
	if diags.HasErrors() {
		return &pulumirpc.GeneratePackageResponse{Diagnostics: out}, nil
	}
	files, err := generate(pkg, req, loader)
	if err != nil {
		return nil, err
	}
	for name, data := range files {
		path := filepath.Join(req.GetDirectory(), name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return &pulumirpc.GeneratePackageResponse{Diagnostics: out}, nil
}
