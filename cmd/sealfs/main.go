// Command sealfs inspects, reads and verifies sealfs images.
//
// Every command is a thin layer over the library (see ../../cocoonfs): the
// command files turn flags into options and call one or two library
// functions. Exit codes are listed in EXIT_CODES.md and never change.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
