# From KASAN's report of the second free back to the first one (bugs.sh runs this against
# `krr replay --gdb` of the recording).
break kasan_report_invalid_free
continue
printf "KASAN report: free of %#lx, type %d\n", ptr, type
set $bad = (unsigned long)ptr
bt 6
delete
# Closing the V3 ring freed its page vector; the union kept pointing at it.
break free_pg_vec
reverse-continue
set $vec = (unsigned long)pg_vec
bt 6
if $vec == $bad
  printf "first freed by free_pg_vec when the TPACKET_V3 ring closed: bitmap_free() was given that ring's pg_vec %#lx\n", $vec
else
  printf "the last free_pg_vec before the report freed %#lx, not %#lx\n", $vec, $bad
end
