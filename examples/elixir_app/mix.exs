# An Elixir application using aion: a workflow written in Elixir
# (`@behaviour :aion_workflow`) and an ExUnit test that starts and awaits it.
#
# aion is a rebar3 project: Mix builds it with the system rebar3 (MIX_REBAR3) and never
# contacts a package registry (no dependency but the path one; HEX_OFFLINE=1).
#   MIX_ENV=test MIX_REBAR3=/usr/bin/rebar3 HEX_OFFLINE=1 mix test --no-start
# or `make test-elixir` from the repository root.
defmodule ElixirApp.MixProject do
  use Mix.Project

  def project do
    [
      app: :elixir_app,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: false,
      # build outside examples/: rebar3 copies examples/ (its extra_src_dirs) into _build
      build_path: "../../_build/elixir",
      deps: deps()
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end

  defp deps do
    [{:aion, path: "../..", manager: :rebar3}]
  end
end
