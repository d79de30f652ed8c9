;; fd_write with many (empty) iovecs, and on any fd: the host side of WASI must stay bounded
;; (fuel charges one unit per iovec) and route only fds 1 and 2.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; `n` iovecs at address 2048 (all zero: empty), written to fd 1; returns the errno.
  (func (export "iovecs") (param $n i32) (result i32)
    (call $fd_write (i32.const 1) (i32.const 2048) (local.get $n) (i32.const 65528)))
  ;; One iovec of 5 bytes ("hello" at 16) to `fd`; returns the errno.
  (func (export "write_fd") (param $fd i32) (result i32)
    (i32.store (i32.const 1024) (i32.const 16))
    (i32.store (i32.const 1028) (i32.const 5))
    (call $fd_write (local.get $fd) (i32.const 1024) (i32.const 1) (i32.const 65528)))
  (data (i32.const 16) "hello"))
