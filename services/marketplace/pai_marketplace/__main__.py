from pai_marketplace.shell import main

main()
