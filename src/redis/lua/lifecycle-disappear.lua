-- ARGV[5..7]: kind ('u' or 'r'), id, member: a connection closed, or a room's last local member left.
disappear(ARGV[5], ARGV[6], ARGV[7])
return emitted
