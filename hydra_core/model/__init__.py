"""The hypernetwork and what it compiles a card into: a projection head, a fusion of dense and
lexical scores, together a retriever."""
