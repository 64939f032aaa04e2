-- One HNSW index per embedding model. store/documents.py names a model's index after its model
-- and dimension (chunks_hnsw_ + 12 hex digits of uuid5(URL, 'model:dim')) and makes it when a
-- worker first uses the model; 0002 had made the local model's under another name, so workers
-- made a second, identical one beside it, and every chunk stored updated two graphs. The one
-- a worker made is dropped, and 0002's takes the name workers look for.
DROP INDEX IF EXISTS chunks_hnsw_f14fa7c232e8;  -- uuid5(URL, 'all-MiniLM-L6-v2:384')
ALTER INDEX chunks_hnsw_minilm RENAME TO chunks_hnsw_f14fa7c232e8;
