;; State for the snapshot tests: a mutable global, linear memory, and a host import.
(module
  (import "env" "seen" (func $seen (param i32)))
  (memory (export "memory") 1 4)
  (global $count (mut i32) (i32.const 0))
  (func (export "bump") (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $seen (global.get $count))
    (global.get $count))
  (func (export "count") (result i32) (global.get $count))
  (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "grow") (result i32) (memory.grow (i32.const 1)))
  (func (export "noop")))
