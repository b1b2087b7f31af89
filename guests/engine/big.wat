;; A memory that can reach 65536 pages (4 GiB): sizes must not wrap.
(module
  (memory (export "memory") 0 65536)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "load_last") (result i32) (i32.load (i32.const 0xfffffffc)))
  (func (export "fill_tail") (memory.fill (i32.const 0xffff0000) (i32.const 7) (i32.const 0x10000)))
)
