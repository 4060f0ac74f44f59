-- catalog_read.lua: a producer's check of a GPU type's node catalog, in one round trip
-- (comfyq.catalog.reading): the digest alone when it matches the producer's copy, else the
-- catalog too.
--
-- KEYS: [1] the catalog's digest, [2] the catalog.
-- ARGV: [1] the digest of the producer's copy ('' = none).
-- Returns {digest} when it matches, {digest, catalog JSON} when it differs, false when nothing
-- is published.

local digest = redis.call('GET', KEYS[1])
if not digest then return false end
if digest == ARGV[1] then return {digest} end
local catalog = redis.call('GET', KEYS[2])
if not catalog then return false end
return {digest, catalog}
