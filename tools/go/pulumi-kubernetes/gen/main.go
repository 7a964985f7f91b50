// Command gen writes schema-embed.json and terraform-mapping-embed.json, the
// inputs that pulumi-resource-kubernetes embeds.
//
// It does what upstream's provider/cmd/pulumi-resource-kubernetes/generate.go
// does (stamp the release version into the schema, compact both files) but
// takes its input and output directories as flags, because the inputs live in
// the read-only Go module cache and the outputs go to a staging directory.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)

func main() {
	in := flag.String("in", "", "directory holding schema.json and terraform-mapping.json")
	out := flag.String("out", ".", "directory to write the *-embed.json files to")
	version := flag.String("version", "", "provider version to stamp into the schema, e.g. 4.25.0")
	flag.Parse()
	if *in == "" || *version == "" {
		log.Fatal("usage: gen -in DIR -version X.Y.Z [-out DIR]")
	}

	raw, err := os.ReadFile(filepath.Join(*in, "schema.json"))
	if err != nil {
		log.Fatal(err)
	}
	var spec schema.PackageSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		log.Fatalf("cannot deserialize schema: %v", err)
	}
	// The engine reads the package version from the schema the provider
	// serves; an unstamped schema would report no version at all.
	spec.Version = *version
	versioned, err := json.Marshal(spec)
	if err != nil {
		log.Fatalf("cannot reserialize schema: %v", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "schema-embed.json"), versioned, 0o600); err != nil {
		log.Fatal(err)
	}

	raw, err = os.ReadFile(filepath.Join(*in, "terraform-mapping.json"))
	if err != nil {
		log.Fatal(err)
	}
	var mapping any
	if err := json.Unmarshal(raw, &mapping); err != nil {
		log.Fatalf("cannot deserialize terraform mapping: %v", err)
	}
	compact, err := json.Marshal(mapping)
	if err != nil {
		log.Fatalf("cannot reserialize terraform mapping: %v", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "terraform-mapping-embed.json"), compact, 0o600); err != nil {
		log.Fatal(err)
	}
}
