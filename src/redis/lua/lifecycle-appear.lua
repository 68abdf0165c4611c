-- ARGV[5..]: kind ('u' or 'r'), id, member, repeated: each member is there (a connection admitted,
-- a room's first local member, or a node's refresh of what it holds, which also re-adds what a
-- restarted Redis lost). Returns the event types produced.
for i = 5, #ARGV, 3 do appear(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
return emitted
