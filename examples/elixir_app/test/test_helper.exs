# A fresh database for every run, then start aion (mix test runs with --no-start).
db = Path.join(System.tmp_dir!(), "aion_elixir_#{System.unique_integer([:positive])}.db")
Application.put_env(:aion, :db_path, String.to_charlist(db))

# The workflow engine and the JSON codec land separately; until both are in the build,
# the tests that need them are excluded rather than failing.
if Code.ensure_loaded?(:aion_engine) and Code.ensure_loaded?(:aion_json) do
  {:ok, _} = Application.ensure_all_started(:aion)
  ExUnit.start()
else
  IO.puts("aion_engine or aion_json is not built yet: excluding :needs_engine tests")
  ExUnit.start(exclude: [:needs_engine])
end

ExUnit.after_suite(fn _ ->
  _ = Application.stop(:aion)
  for suffix <- ["", "-wal", "-shm"], do: File.rm(db <> suffix)
end)
