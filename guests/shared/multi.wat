;; Two memories: memory 0 imported (env.memory, shared with the host and
;; other modules), memory 1 the module's own. Copies between them, both with
;; memory.copy across memories and with plain loads and stores.
(module
  (import "env" "memory" (memory $shared 1))
  (memory $own (export "own") 1 4)
  ;; own[dst, dst+len) = shared[src, src+len)
  (func (export "copy_in") (param $dst i32) (param $src i32) (param $len i32)
    (memory.copy $shared $own (local.get $dst) (local.get $src) (local.get $len)))
  ;; shared[dst, dst+len) = own[src, src+len)
  (func (export "copy_out") (param $dst i32) (param $src i32) (param $len i32)
    (memory.copy $own $shared (local.get $dst) (local.get $src) (local.get $len)))
  ;; own[dst + 4k] = shared[src + 4k] + 1 for k < n (word by word)
  (func (export "copy_in_plus1") (param $dst i32) (param $src i32) (param $n i32)
    (local $k i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $k) (local.get $n)))
        (i32.store $own
          (i32.add (local.get $dst) (i32.shl (local.get $k) (i32.const 2)))
          (i32.add
            (i32.load $shared
              (i32.add (local.get $src) (i32.shl (local.get $k) (i32.const 2))))
            (i32.const 1)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $next))))
  (func (export "load_own") (param i32) (result i32) (i32.load $own (local.get 0)))
  (func (export "load_shared") (param i32) (result i32) (i32.load $shared (local.get 0)))
  (func (export "size_own") (result i32) (memory.size $own))
)
