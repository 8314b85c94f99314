"""A LangChain RAG chain over the esrag cascade retriever, with a fake LLM so it runs offline.

    python examples/langchain_rag.py "how is espresso made?"
Swap FakeListChatModel for any real chat model (ChatOpenAI, ChatOllama, ...) to get answers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from esrag.data.corpus import read_corpus
from esrag.encoder import EspressoEncoder
from esrag.index import CascadeConfig
from esrag.langchain.vectorstore import CascadeVectorStore

HERE = Path(__file__).resolve().parent

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only this context:\n\n{context}"),
        ("human", "{question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="How is espresso made?")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    args = parser.parse_args()

    encoder = EspressoEncoder(args.model)
    docs = list(read_corpus(HERE / "data" / "quickstart.jsonl"))
    store = CascadeVectorStore.from_texts(
        [d.text for d in docs],
        encoder,
        metadatas=[d.metadata for d in docs],
        ids=[d.id for d in docs],
        config=CascadeConfig(coarse_dim=32, shortlist=20),
    )
    retriever = store.as_retriever(search_kwargs={"k": 3, "shortlist": 20})

    # The fake model returns a canned reply; the point is the chain and the retrieved context.
    llm = FakeListChatModel(responses=["(fake LLM) An answer grounded in the context above."])
    show = RunnableLambda(lambda value: print(value.to_string(), "\n") or value)
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | show
        | llm
        | StrOutputParser()
    )
    print(chain.invoke(args.question))


if __name__ == "__main__":
    main()
