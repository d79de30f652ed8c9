;; Compute-bound exports for the README example, the tests and the benchmark.
(module
  ;; Recursive Fibonacci: fib(20) = 6765.
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else
        (i32.add
          (call $fib (i32.sub (local.get $n) (i32.const 1)))
          (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  ;; A checksum loop of n iterations (an LCG folded into an accumulator).
  (func (export "checksum") (param $n i32) (result i32)
    (local $acc i32) (local $x i32)
    (local.set $x (i32.const 12345))
    (block $done
      (loop $loop
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1103515245)) (i32.const 12345)))
        (local.set $acc (i32.xor (i32.rotl (local.get $acc) (i32.const 5)) (local.get $x)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $loop)))
    (local.get $acc))
  (func (export "noop")))
