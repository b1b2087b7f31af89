;; Call-cost guest for bench/bench_engine.c.
;;
;; Host to guest: "add" and "nop" are called from the host many times.
;; Guest to host: the loop_* exports call a host import n times, threading
;; a value through so that no call can be skipped, and return it; the host
;; divides the time by n. loop_guest calls a guest function instead (the C
;; compiler may inline it and fold the loop: that is what wasm2c code gets),
;; loop_indirect calls it through the table (call_indirect: bounds and type
;; check, never inlined). The same file is used for peers
;; (bench/peers/), so keep it free of kiln-only features.
(module
  (import "host" "inc" (func $inc (param i32) (result i32)))
  (import "host" "inc_generic" (func $inc_generic (param i32) (result i32)))
  (table 1 funcref)
  (elem (i32.const 0) $inner)
  (type $i2i (func (param i32) (result i32)))

  (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "nop"))

  (func $inner (param i32) (result i32)
    (i32.add (local.get 0) (i32.const 1)))

  (func (export "loop_import") (param $n i32) (result i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (call $inc (local.get $acc)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $acc))

  (func (export "loop_import_generic") (param $n i32) (result i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (call $inc_generic (local.get $acc)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $acc))

  (func (export "loop_guest") (param $n i32) (result i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (call $inner (local.get $acc)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $acc))

  (func (export "loop_indirect") (param $n i32) (result i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (call_indirect (type $i2i) (local.get $acc) (i32.const 0)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $acc))
)
