;; Imports a memory (not supported) and a function: used to test link errors.
(module
  (import "env" "mem" (memory 1))
  (import "env" "f" (func (param i32) (result i32))))
