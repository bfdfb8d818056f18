from pai_diagnosis.shell import main

main()
