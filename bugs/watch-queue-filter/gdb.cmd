# From KASAN's report back to the allocation of the object the write went past (bugs.sh runs this
# against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 4
delete
# The last allocation before the report is the filter the kernel sized from its first pass.
break __kmalloc
reverse-continue
set $size = $rdi
printf "went back to __kmalloc(%lu)\n", $size
bt 2
finish
printf "object %#lx, %lu bytes; the bad write at %#lx is %ld bytes past its end\n", $rax, $size, $bad, $bad - ($rax + $size)
