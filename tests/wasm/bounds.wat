;; Loads and stores at the edges of linear memory (docs/abi.md, "Wasm guard pages"): wasmtime
;; checks them with guard pages, wasmi in code; both must trap exactly where the memory ends.
(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "load8") (param $at i32) (result i32) (i32.load8_u (local.get $at)))
  (func (export "store8") (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (local.get $v)))
  (func (export "load32") (param $at i32) (result i32) (i32.load (local.get $at)))
  ;; 32 MiB - 1 past the index (inside wasmtime's guard: no check emitted) and 32 MiB past it
  ;; (the guard's last byte for index 0xffffffff: a check emitted), then ~2 GiB past it.
  (func (export "load8_guard") (param $at i32) (result i32)
    (i32.load8_u offset=0x1ffffff (local.get $at)))
  (func (export "load8_guard_end") (param $at i32) (result i32)
    (i32.load8_u offset=0x2000000 (local.get $at)))
  (func (export "store8_beyond") (param $at i32)
    (i32.store8 offset=0x7fffffff (local.get $at) (i32.const 1))))
