// Package vmbhyve drives vm-bhyve's `vm` command: list, clone, start, stop,
// poweroff and destroy guests, plus reading and writing their NAME.conf.
//
// vm-bhyve is a shell program with no locking, asynchronous start and stop,
// exit codes that lie (≤1.6 `vm start` returns 0 on failure) and a table
// output made for humans. This package turns that into Go calls with typed
// errors:
//
//   - every command is an argv (never a shell): Privilege + VM + arguments,
//     or Privilege + Sysrc + arguments, run with stdin at /dev/null;
//   - one mutating command at a time per VM within the process, different VMs
//     in parallel;
//   - failures become a *CommandError that quotes vm-bhyve's own message;
//     ErrNotFound, ErrBusy, ErrExists and ErrNotRunning classify the common
//     ones; a missing binary or a privilege prefix that wants a password is a
//     *failure.ConfigError that says what to fix.
//
// The package only knows vm-bhyve's default datastore: VMDir is the directory
// that holds NAME/NAME.conf for the guests this runner creates.
package vmbhyve
