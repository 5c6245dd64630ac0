# A fresh database for every run, then start aion (mix test runs with --no-start).
db = Path.join(System.tmp_dir!(), "aion_elixir_#{System.unique_integer([:positive])}.db")
Application.put_env(:aion, :db_path, String.to_charlist(db))

# The workflow engine (aion_engine) lands separately; until it is in the build, the
# tests that need it are excluded rather than failing.
if Code.ensure_loaded?(:aion_engine) do
  {:ok, _} = Application.ensure_all_started(:aion)
  ExUnit.start()
else
  IO.puts("aion_engine is not built yet: excluding :needs_engine tests")
  ExUnit.start(exclude: [:needs_engine])
end
