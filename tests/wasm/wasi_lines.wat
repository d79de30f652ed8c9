;; Buffered WASI output (issue 22 item 3): many small writes, both streams interleaved with a
;; host import between them, and a trap after output.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "env" "note" (func $note))
  (memory (export "memory") 1)
  ;; Writes `len` bytes at `ptr` to `fd` (one iovec at 1024); returns the errno.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 1024) (local.get $ptr))
    (i32.store (i32.const 1028) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 1024) (i32.const 1) (i32.const 1040)))
  ;; `n` lines "line NNNNN\n" (the line's number, 5 digits) to stdout, one fd_write each.
  (func (export "lines") (param $n i32)
    (local $i i32) (local $v i32) (local $k i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (local.get $i))
        (local.set $k (i32.const 4))
        (loop $digit
          (i32.store8 (i32.add (i32.const 69) (local.get $k))
            (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
          (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
          (local.set $k (i32.sub (local.get $k) (i32.const 1)))
          (br_if $digit (i32.ge_s (local.get $k) (i32.const 0))))
        (drop (call $write (i32.const 1) (i32.const 64) (i32.const 11)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  ;; o1 o2 (stdout), e1 (stderr), the host import, o3, e2, then a trap when `trap` is set.
  (func (export "mixed") (param $trap i32)
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 2)))
    (drop (call $write (i32.const 1) (i32.const 18) (i32.const 2)))
    (drop (call $write (i32.const 2) (i32.const 20) (i32.const 2)))
    (call $note)
    (drop (call $write (i32.const 1) (i32.const 22) (i32.const 2)))
    (drop (call $write (i32.const 2) (i32.const 24) (i32.const 2)))
    (if (local.get $trap) (then unreachable)))
  ;; o1, the host import, o2, the host import again (the test's host refuses this flush), then
  ;; o3: returns o3's errno.
  (func (export "refused") (result i32)
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 2)))
    (call $note)
    (drop (call $write (i32.const 1) (i32.const 18) (i32.const 2)))
    (call $note)
    (call $write (i32.const 1) (i32.const 22) (i32.const 2)))
  (data (i32.const 16) "o1o2e1o3e2")
  (data (i32.const 64) "line 00000\n"))
