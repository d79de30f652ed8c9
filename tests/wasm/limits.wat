;; A memory whose minimum (64 MiB) exceeds the default memory limit, and a big table.
(module
  (memory (export "memory") 1024)
  (func (export "f") (result i32) (i32.const 1)))
