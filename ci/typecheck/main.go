// Command typecheck is the gate that keeps main.go and executors/bhyve honest
// on machines that cannot compile them.
//
// Upstream gitlab-runner imports modules whose source the module proxy here
// refuses, so `go build` of anything importing it fails. This program
// type-checks our packages from source against upstream's real code through
// the ci/go.work overlay, ignores errors located in upstream packages (the
// consequence of the empty stand-in modules), and fails on any error located
// in ours.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	dir := flag.String("C", ".", "root of the module to check")
	work := flag.String("work", "ci/go.work", "workspace file with the stand-in modules (empty: go's default)")
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{".", "./executors/bhyve"}
	}

	res, err := Check(Options{Dir: *dir, GoWork: *work, Patterns: patterns})
	if err != nil {
		fmt.Fprintln(os.Stderr, "typecheck:", err)
		os.Exit(2)
	}
	for _, d := range res.Ours {
		fmt.Println(d)
	}
	fmt.Printf("typecheck: %d of our packages (test variants included), %d errors in ours, %d upstream errors ignored (stand-in modules)\n",
		res.Packages, len(res.Ours), res.Ignored)
	if len(res.Ours) > 0 {
		os.Exit(1)
	}
}
