%% The state of a workflow process, kept in its process dictionary under
%% ?AION_RUN_KEY so the `aion_workflow' primitives (called from workflow code in
%% the same process) can reach it. Shared by aion_run and aion_workflow only.

-define(AION_RUN_KEY, '$aion_run').

-record(wf, {
          ctx :: aion_ctx:ctx(),
          run_id :: binary(),
          workflow_id :: binary(),
          type :: module(),
          started_at :: integer(),
          input :: term(),
          parent = null :: binary() | null,
          continued_from = null :: binary() | null,
          options = #{} :: map(),            % workflow_started.options (decoded)
          replay :: aion_replay:replay(),
          act_n = 0 :: non_neg_integer(),    % activity commands issued
          timer_n = 0 :: non_neg_integer(),  % timer commands issued
          side_n = 0 :: non_neg_integer(),   % side effects issued
          rand_n = 0 :: non_neg_integer(),   % random/uniform/uuid calls
          query_handlers = #{} :: #{binary() => fun((term()) -> term())},
          non_cancellable = 0 :: non_neg_integer(),
          in_query = false :: boolean(),
          %% signals, patches, deadlines, search attributes (aion_sigq)
          sigq = #{} :: map(),
          stopped = false :: false | stuck | closed | crashed | evicted
         }).
