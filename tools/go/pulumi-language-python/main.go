// Command pulumi-language-python is a minimal Pulumi language host for Python
// programs, built only from the github.com/pulumi/pulumi/sdk/v3 Go module.
//
// Why this exists instead of upstream's host: upstream's host lives in its own
// Go module (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
// and the Go module proxy reachable from this project's machines refuses every
// version of it ("403 This module version is not available"), while pulumi's
// release downloads are unreachable too. Everything the host needs besides the
// gRPC glue is in sdk/v3 at the CLI's own version: the protocol
// (sdk/v3/proto/go), the Python toolchain/virtualenv handling
// (sdk/v3/python/toolchain) and the Python-side shim that actually runs the
// program (sdk/v3/python/cmd/pulumi-language-python-exec, which
// tools/setup-pulumi copies next to this binary). So this host implements only
// what `pulumi preview/up/destroy/install/about` use, plus RunPlugin, which
// runs Python plugins (component providers such as llmkube's own, served to
// YAML and other languages; later policy packs), and GeneratePackage and Link
// (`pulumi package add`, `gen-sdk`: pkg/v3's generator at the CLI's version,
// see ./langhost), and leaves the rest (program codegen, `pulumi new`
// templating, packing) Unimplemented, which the engine treats as "not
// supported". ./nodejs is a codegen-only Node.js host on the same glue.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/pkg/v3/codegen/python"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"llmkube.local/tools/pulumi-language-python/langhost"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The Python shim exits with this code after it has already reported the
// error to the engine; the host must then not report it a second time.
const userActionableExitCode = 32

func main() {
	// Flags the engine may pass to language hosts; accepted for compatibility.
	flag.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	flag.String("root", "", "Project root path (unused: the engine sends it in each request)")
	executor := flag.String("use-executor", "",
		"Path of pulumi-language-python-exec (default: next to this binary, then $PATH)")
	// Runtime options as flags: how the engine starts the host when it loads a Python plugin
	// (a component provider's schema, say); requests that carry options in ProgramInfo win.
	flag.StringVar(&defaultOptions.virtualenv, "virtualenv", "", "Virtualenv of the program or plugin")
	flag.StringVar(&defaultOptions.toolchain, "toolchain", "", "Python toolchain: pip, poetry or uv")
	flag.StringVar(&defaultOptions.typechecker, "typechecker", "", "Type checker to run first (not supported)")
	flag.Parse()
	logging.InitLogging(false, 0, false)

	shim, err := findShim(*executor)
	if err != nil {
		cmdutil.Exit(err)
	}

	var engineAddress string
	if args := flag.Args(); len(args) > 0 {
		engineAddress = args[0]
	}

	langhost.Serve(&pythonHost{shim: shim, engineAddress: engineAddress})
}

// findShim locates pulumi-language-python-exec. Looking next to our own
// executable first means a plugin-cache or bin-dir install works even when
// that directory is not on $PATH.
func findShim(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	const name = "pulumi-language-python-exec"
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			candidate := filepath.Join(filepath.Dir(real), name)
			if _, err := os.Stat(candidate); err == nil {
				return candidate, nil
			}
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("could not find %s next to this binary or on $PATH: %w", name, err)
	}
	return path, nil
}

// defaultOptions are the runtime options given as flags (see main).
var defaultOptions struct{ virtualenv, toolchain, typechecker string }

type pythonHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	shim string

	mu            sync.Mutex
	engineAddress string
}

func (h *pythonHost) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.engineAddress = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *pythonHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// resolveToolchain maps the project's `runtime.options` (virtualenv, toolchain)
// onto sdk/v3's toolchain package, the same component upstream's host uses,
// so virtualenv paths are interpreted exactly as upstream does (relative to
// the project root).
func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := toolchain.PythonOptions{
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Toolchain:  toolchain.Pip,
	}
	fields := info.GetOptions().GetFields()
	opts.Virtualenv = defaultOptions.virtualenv
	if v, ok := fields["virtualenv"]; ok {
		opts.Virtualenv = v.GetStringValue()
	}
	toolchainName := defaultOptions.toolchain
	if v, ok := fields["toolchain"]; ok {
		toolchainName = v.GetStringValue()
	}
	if toolchainName != "" {
		switch name := toolchainName; name {
		case "pip", "":
			opts.Toolchain = toolchain.Pip
		case "poetry":
			opts.Toolchain = toolchain.Poetry
		case "uv":
			opts.Toolchain = toolchain.Uv
		default:
			return nil, fmt.Errorf("unsupported python toolchain %q", name)
		}
	}
	typechecker := defaultOptions.typechecker
	if v, ok := fields["typechecker"]; ok {
		typechecker = v.GetStringValue()
	}
	if typechecker != "" {
		// Running mypy/pyright before the program is not implemented here;
		// fail loudly rather than silently skip a check the project asked for.
		return nil, fmt.Errorf("runtime option typechecker=%q is not supported by this language host", typechecker)
	}
	return toolchain.ResolveToolchain(opts)
}

// pluginScan prints, as JSON, the pulumi-plugin.json of every installed
// distribution: that file is how Pulumi Python packages declare the resource
// plugin (and version) they need.
const pluginScan = `
import json, importlib.metadata as md
out = []
for dist in md.distributions():
    for f in dist.files or []:
        if f.name == "pulumi-plugin.json":
            try:
                data = json.loads(f.read_text())
            except Exception:
                continue
            if data.get("resource"):
                out.append(data)
print(json.dumps(out))
`

func (h *pythonHost) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", pluginScan)
	if err != nil {
		return nil, err
	}
	cmd.Dir = req.GetInfo().GetProgramDirectory()
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing pulumi plugins of installed python packages: %w", err)
	}
	var found []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Server  string `json:"server"`
	}
	if err := json.Unmarshal(out, &found); err != nil {
		return nil, fmt.Errorf("parsing python plugin list: %w", err)
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	seen := map[string]bool{}
	for _, p := range found {
		if p.Name == "" || seen[p.Name+"@"+p.Version] {
			continue
		}
		seen[p.Name+"@"+p.Version] = true
		v := p.Version
		if v != "" && !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Name: p.Name, Kind: "resource", Version: v, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *pythonHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}

	h.mu.Lock()
	engine := h.engineAddress
	h.mu.Unlock()

	args := []string{"-u", h.shim}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", engine)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("organization", req.GetOrganization())
	add("root_directory", req.GetInfo().GetRootDirectory())
	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = req.GetProgram()
	}
	if program == "" {
		program = "."
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	if dir := req.GetInfo().GetProgramDirectory(); dir != "" {
		cmd.Dir = dir
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr

	// The Python SDK reads stack config and the names of secret keys from
	// these two variables (pulumi.runtime.config); it expects a JSON object
	// and a JSON list, never null, so nil (empty) values are sent as {} / [].
	configMap, keys := req.GetConfig(), req.GetConfigSecretKeys()
	if configMap == nil {
		configMap = map[string]string{}
	}
	if keys == nil {
		keys = []string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, fmt.Errorf("serializing config: %w", err)
	}
	secretKeys, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("serializing config secret keys: %w", err)
	}
	if cmd.Env == nil {
		// Without a virtualenv the toolchain leaves Env unset (inherit);
		// appending to nil would instead start Python with only our two vars.
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys))

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == userActionableExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards dependency-installation output to the CLI, which shows
// it live during `pulumi install` / `pulumi up`.
type streamWriter struct {
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: data}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: data}
	}
	if err := w.stream.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// InstallDependencies backs `pulumi install`. It is sdk/v3's toolchain code,
// the same as upstream's host, so it also creates a missing virtualenv and, as
// upstream does, upgrades pip, setuptools and wheel inside it before
// installing requirements.txt.
func (h *pythonHost) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest,
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return err
	}
	dir := req.GetInfo().GetProgramDirectory()
	if dir == "" {
		dir = req.GetDirectory()
	}
	out, errOut := streamWriter{stream: stream}, streamWriter{stream: stream, stderr: true}
	return tc.InstallDependencies(stream.Context(), dir, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, out, errOut)
}

func (h *pythonHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
	}, nil
}

func (h *pythonHost) GetProgramDependencies(
	ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	deps, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, d := range deps {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
	}
	return resp, nil
}

// RuntimeOptionsPrompts: no extra questions during `pulumi new`.
func (h *pythonHost) RuntimeOptionsPrompts(
	context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// RunPlugin runs a Python plugin: `python -u <plugin directory> <args>`, which
// runs the directory's __main__.py (for a component provider, the call to
// pulumi.provider.experimental.component_provider_host) in the plugin's own
// virtualenv (runtime options of its PulumiPlugin.yaml). The plugin's output is
// streamed back as it comes: the engine reads the port it serves on from the
// first line of its stdout.
func (h *pythonHost) RunPlugin(
	req *pulumirpc.RunPluginRequest, server grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	info := req.GetInfo()
	tc, err := resolveToolchain(info)
	if err != nil {
		return err
	}
	ctx := server.Context()
	if err := tc.ValidateVenv(ctx); err != nil {
		return err
	}
	program := info.GetProgramDirectory()
	if entry := info.GetEntryPoint(); entry != "" && entry != "." {
		program = filepath.Join(program, entry)
	}
	if program == "" {
		program = req.GetProgram() // older engines: the deprecated field
	}
	cmd, err := tc.Command(ctx, append([]string{"-u", program}, req.GetArgs()...)...)
	if err != nil {
		return err
	}
	cmd.Dir = req.GetPwd()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, req.GetEnv()...)
	stream := &pluginStream{server: server}
	cmd.Stdout, cmd.Stderr = pluginOutput{stream, false}, pluginOutput{stream, true}

	code := 0
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return fmt.Errorf("running python plugin %s: %w", program, err)
		}
		code = exitErr.ExitCode()
	}
	return stream.send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

// pluginStream serialises sends: a gRPC stream is not safe for concurrent
// Send, and the plugin's stdout and stderr are copied by two goroutines.
type pluginStream struct {
	mu     sync.Mutex
	server grpc.ServerStreamingServer[pulumirpc.RunPluginResponse]
}

func (s *pluginStream) send(resp *pulumirpc.RunPluginResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.server.Send(resp)
}

type pluginOutput struct {
	stream *pluginStream
	stderr bool
}

func (w pluginOutput) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: data}}
	if w.stderr {
		resp = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: data}}
	}
	if err := w.stream.send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// GeneratePackage writes a Python SDK with pkg/v3's Python generator: what
// `pulumi package add` and `pulumi package gen-sdk --language python` ask for.
func (h *pythonHost) GeneratePackage(
	ctx context.Context, req *pulumirpc.GeneratePackageRequest,
) (*pulumirpc.GeneratePackageResponse, error) {
	return langhost.GeneratePackage(ctx, req, func(
		pkg *schema.Package, req *pulumirpc.GeneratePackageRequest, loader schema.ReferenceLoader,
	) (map[string][]byte, error) {
		return python.GeneratePackage("pulumi-language-python", pkg, req.GetExtraFiles(), loader)
	})
}

// Link adds generated SDKs to a Python program (`pulumi package add`): each
// SDK's folder, relative to the program, becomes a line of requirements.txt
// and is installed into the program's virtualenv. Only the pip toolchain keeps
// requirements.txt; poetry and uv projects are refused with a clear error
// rather than half-linked.
func (h *pythonHost) Link(ctx context.Context, req *pulumirpc.LinkRequest) (*pulumirpc.LinkResponse, error) {
	info := req.GetInfo()
	if name := info.GetOptions().GetFields()["toolchain"].GetStringValue(); name != "" && name != "pip" {
		return nil, fmt.Errorf("linking a package into a %s project is not supported by this language host; "+
			"add the SDK folder to the project's dependencies by hand", name)
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	dir := info.GetProgramDirectory()
	requirements := filepath.Join(dir, "requirements.txt")
	existing, err := os.ReadFile(requirements)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(existing), "\n"), "\n")
	var imports []string
	for _, dep := range req.GetPackages() {
		// The engine gives the SDK's folder relative to the program, or absolute.
		rel, path := dep.GetPath(), dep.GetPath()
		if filepath.IsAbs(path) {
			if rel, err = filepath.Rel(dir, path); err != nil {
				return nil, err
			}
		} else {
			path = filepath.Join(dir, path)
		}
		if !slices.Contains(lines, rel) {
			lines = append(lines, rel)
		}
		cmd, err := tc.Command(ctx, "-m", "pip", "install", "--quiet", path)
		if err != nil {
			return nil, err
		}
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("installing %s into the program's virtualenv: %w\n%s", path, err, out)
		}
		name := dep.GetPackage().GetName()
		imports = append(imports, fmt.Sprintf("import pulumi_%s as %s", strings.ReplaceAll(name, "-", "_"), name))
	}
	text := strings.TrimLeft(strings.Join(lines, "\n"), "\n") + "\n"
	if err := os.WriteFile(requirements, []byte(text), 0o644); err != nil { //nolint:gosec // a project file
		return nil, err
	}
	return &pulumirpc.LinkResponse{ImportInstructions: strings.Join(imports, "\n")}, nil
}

// streamWriter must satisfy io.Writer for the toolchain's install functions.
var _ io.Writer = streamWriter{}
