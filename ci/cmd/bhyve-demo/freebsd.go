package main

import (
	"os"
	"path/filepath"
)

// freebsdCommands writes the article's FreeBSD commands for the simulated
// guest, which runs the machine's Linux userland: each says so and runs its
// Linux counterpart, so the job script stays exactly the article's. They are
// the demo's only pretence; on a real host the template has the real ones.
func freebsdCommands(dir string) (map[string]string, error) {
	counterparts := map[string]string{
		"ifconfig":        "ip address",
		"netstat":         "ip route",
		"sockstat":        "ss -4ltn",
		"freebsd-version": "uname -r",
	}
	files := map[string]string{}
	for name, linux := range counterparts {
		path := filepath.Join(dir, name)
		script := "#!/bin/sh\n# bhyve-demo: simulated FreeBSD command\necho \"(simulated guest: FreeBSD's " + name + " runs as '" + linux + "')\"\nexec " + linux + "\n"
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			return nil, err
		}
		files["/usr/local/bin/"+name] = path
	}
	return files, nil
}
