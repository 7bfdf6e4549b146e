package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// globalOptions are the root's persistent flags.
type globalOptions struct {
	JSON bool
}

func (o *globalOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.JSON, "json", false, "print machine-readable JSON on stdout instead of text")
}

const rootLong = `sealfs keeps data on storage it does not trust (a disk image, a partition,
a file in the cloud): every byte is encrypted and authenticated, and one root
digest binds the whole image, so tampering, mixing images and (with the digest
kept somewhere trusted) rollback are detected. It reads CocoonFS images
(the encrypted filesystem COCONUT-SVSM keeps vTPM state in), as written by the
reference cocoonfs tool.

info, ls, read and verify open images read-only and never write to them;
mkfs creates images, and write and rm change them in journaled, all-or-nothing
transactions. blob keeps a content-addressed store whose every read is
verified; merkle, fsverity and dmverity compute and check the Fuchsia, Linux
fs-verity and dm-verity hash trees. bd makes and serves (over NBD) block
devices that are encrypted, authenticated, or both. nvram keeps named state
blobs with metadata in an image; tpm manufactures a vTPM into one, moves
its state to and from swtpm, and runs swtpm on it. mount serves an image with
FUSE, every close a durable transaction.`

const exitStatusHelp = `Exit status (stable; see EXIT_CODES.md):
   0  success
   1  other error (I/O, output file, unclassified)
   2  invalid command line (flags, arguments, inode number, key source)
   3  wrong key
   4  authentication failed: the image was altered (tampering, partial rollback, bit rot)
   5  corrupt image, not a CocoonFS image, or unsupported algorithm
   6  no such inode, entry, blob or record
   7  image not formatted yet (creation info header only) or pending journal
   8  device block size larger than the image's IO block (read-write opens; --force)
   9  root digest or update counter not as expected (--expect-root, --min-counter)
  10  not enough space; the image is unchanged
  11  registry: unauthorized (no or wrong credentials)
  12  registry: no such repository, tag or blob
  13  registry: digest mismatch (it served other bytes than those named)
  14  registry: unreachable (connection, DNS, TLS, timeout, server error)
`

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:     "sealfs",
		Short:   "Trusted storage on untrusted media",
		Long:    rootLong,
		Version: version(),
		Example: `  sealfs info disk.img
  sealfs ls -k disk.key disk.img
  sealfs read -k disk.key disk.img 42 -o nv.bin
  sealfs verify -k disk.key disk.img
  sealfs write -k disk.key disk.img 42 nv.bin
  sealfs rm -k disk.key disk.img 42
  sealfs blob put ./store update.bin
  sealfs fsverity update.bin
  sealfs bd serve disk.img --variant vericrypt --key-file k --mac-key-file m --root HEX`,
		// execute prints errors once, in our format; cobra's usage dump
		// after every error would bury the message.
		SilenceErrors: true,
		SilenceUsage:  true,
		// The command tree is an interface; add completion deliberately.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	g.AddFlags(root.PersistentFlags())
	// Declared here so cobra does not claim -v, which stays free.
	root.Flags().Bool("version", false, "print the version and exit")
	root.SetHelpTemplate(root.HelpTemplate() + "{{if not .HasParent}}\n" + exitStatusHelp + "{{end}}")
	root.AddCommand(newInfoCommand(g), newLsCommand(g), newReadCommand(g), newVerifyCommand(g), newMkfsCommand(g), newMkfsinfoCommand(g), newWriteCommand(g), newRmCommand(g), newReplayCommand(g), newMountCommand(g))
	root.AddCommand(newMerkleCommand(g), newFsverityCommand(g), newDmverityCommand(g))
	root.AddCommand(newAuxCommand(g))
	root.AddCommand(newBlobCommand(g))
	root.AddCommand(newBdCommand(g))
	root.AddCommand(newImageCommand(g))
	root.AddCommand(newNvramCommand(g), newTpmCommand(g))
	return root
}

// runError marks an error returned by a command's own code. Anything else
// cobra returns comes from parsing the command line: a usage error.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// execute runs the CLI and returns the exit code. It is main without
// os.Exit, so tests can run whole command lines in-process.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(&globalOptions{})
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitUsage
	var re *runError
	if errors.As(err, &re) {
		err, code = re.err, exitCode(re.err)
	}
	fmt.Fprintf(stderr, "sealfs: %v\n", err)
	if code == ExitUsage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// version is the module version when built with "go install ...@version".
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
