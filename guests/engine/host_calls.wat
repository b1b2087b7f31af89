;; Imports a host function and a host memory: tests linking, generic and
;; native host functions and host-raised traps.
(module
  (import "host" "mul" (func $mul (param i32 i32) (result i32)))
  (import "host" "pair" (func $pair (param i64) (result i64 f64)))
  (import "host" "fail" (func $fail (param i32)))
  (import "host" "mem" (memory 1))
  (func (export "use_mul") (param i32) (result i32)
    (call $mul (local.get 0) (i32.const 3)))
  (func (export "use_pair") (param i64) (result f64)
    (call $pair (local.get 0)) (drop (i64.const 0)) (return))
  (func (export "use_fail") (param i32) (call $fail (local.get 0)))
  (func (export "peek") (param i32) (result i32) (i32.load (local.get 0)))
)
