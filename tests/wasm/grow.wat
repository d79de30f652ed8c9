;; memory.grow without a declared maximum: the store limit bounds it (issue 22 item 1).
(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "poke") (param $at i32) (param $v i32) (i32.store (local.get $at) (local.get $v)))
  (func (export "peek") (param $at i32) (result i32) (i32.load (local.get $at))))
