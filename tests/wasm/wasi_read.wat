;; Reads stdin one byte per call (fd_read with one 1-byte iovec), as a reactor would between
;; calls: what the guest read ahead must not outlive the call (tests/kvm/wasi_stdin.test.ts).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; The next byte of stdin; -1 at the end, -2 - errno on an error.
  (func (export "read_byte") (result i32)
    (local $errno i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (local.set $errno
      (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (local.get $errno)
      (then (return (i32.sub (i32.const -2) (local.get $errno)))))
    (if (i32.eqz (i32.load (i32.const 8)))
      (then (return (i32.const -1))))
    (i32.load8_u (i32.const 16))))
