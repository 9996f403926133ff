package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func init() {
	register("import", "-archive FILE -name NAME: client-side Import of a docker-save or OCI archive, then run the image", runImport)
	register("export", "client-side Export of the pulled test image: an OCI+docker archive that imports back and runs", runExport)
}

// runImported unpacks image name and runs `echo <word>` from it.
func (e *env) runImported(id, name, word string) error {
	i, err := e.client.ImageService().Get(e.ctx, name)
	if err != nil {
		return fmt.Errorf("the imported image %s: %w", name, err)
	}
	img := containerd.NewImage(e.client, i)
	if err := img.Unpack(e.ctx, e.snapshotter); err != nil {
		return fmt.Errorf("Unpack(%s): %w", name, err)
	}
	c, err := e.newContainer(id, img, []string{"echo", word})
	if err != nil {
		return err
	}
	defer e.removeContainer(c)
	code, out, _, err := e.runToExit(c)
	if err != nil {
		return err
	}
	if err := expect("exit status", code, 0); err != nil {
		return err
	}
	return expect("output of the imported image", out, word+"\n")
}

func (e *env) importArchive(r io.Reader, name string) error {
	imgs, err := e.client.Import(e.ctx, r)
	if err != nil {
		return fmt.Errorf("Import: %w", err)
	}
	for _, i := range imgs {
		if i.Name == name {
			return nil
		}
	}
	var names []string
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	return fmt.Errorf("Import created %v, not %s", names, name)
}

func runImport(e *env, args []string) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	path := fs.String("archive", "", "the archive to import")
	name := fs.String("name", "", "the image name the archive carries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || *name == "" {
		return fmt.Errorf("needs -archive and -name")
	}
	f, err := os.Open(*path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := e.importArchive(f, *name); err != nil {
		return err
	}
	return e.runImported("imported", *name, "from-import")
}

func runExport(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := e.client.Export(e.ctx, &buf, archive.WithImage(e.client.ImageService(), img.Name()),
		archive.WithPlatform(platforms.DefaultStrict())); err != nil {
		return fmt.Errorf("Export: %w", err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the exported tar: %w", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		files[h.Name] = data
	}
	for _, want := range []string{"oci-layout", "index.json", "manifest.json"} {
		if _, ok := files[want]; !ok {
			return fmt.Errorf("the export lacks %s", want)
		}
	}
	var index ocispec.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations[images.AnnotationImageName] != img.Name() {
		return fmt.Errorf("index.json: %s", files["index.json"])
	}
	// Every blob the image needs is in the archive.
	children, err := images.Children(e.ctx, e.client.ContentStore(), img.Target())
	if err != nil {
		return fmt.Errorf("reading the image: %w", err)
	}
	for _, d := range append(children, img.Target()) {
		if _, ok := files["blobs/sha256/"+d.Digest.Encoded()]; !ok {
			return fmt.Errorf("the export lacks blob %s (%s)", d.Digest, d.MediaType)
		}
	}
	// It imports back (in another namespace) and runs.
	back := *e
	back.namespace = e.namespace + "-reimport"
	back.ctx = withNamespace(e.ctx, back.namespace)
	if err := back.importArchive(bytes.NewReader(buf.Bytes()), img.Name()); err != nil {
		return fmt.Errorf("importing the export: %w", err)
	}
	return back.runImported("reimported", img.Name(), "round-trip")
}
